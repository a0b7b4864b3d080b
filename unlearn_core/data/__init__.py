"""Questions and text: the one question schema, question files, the WMDP/MMLU/quiz loaders,
the corpora, and the prompt formats scoring uses.

* :mod:`.questions`      the ``Question`` schema and content digests;
* :mod:`.question_files` user question files (JSON/CSV), validated row by row;
* :mod:`.specs`          question-set specs (``mmlu:a,b@heldout!flag``), pure string handling;
* :mod:`.corpora`        the named corpora and how a text file becomes documents;
* :mod:`.loaders`        named question sets and corpora from the data folder (or the hub);
* :mod:`.prompts`        letter and cloze prompts, the 24 orderings.
"""
