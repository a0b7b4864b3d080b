"""Questions and text: the one question schema, question files, the WMDP/MMLU/quiz loaders,
the corpora, and the prompt formats scoring uses.

* :mod:`.questions`      the ``Question`` schema and content digests;
* :mod:`.question_files` user question files (JSON/CSV), validated row by row;
* :mod:`.loaders`        named question sets and corpora from the data folder (or the hub);
* :mod:`.prompts`        letter and cloze prompts, the 24 orderings.
"""
