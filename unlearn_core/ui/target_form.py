"""“Define your own target” on the Home page: a text corpus and a question file become a target.

The files are parsed here first (pure functions, unit-tested), so a bad row is reported at once
with the uploaded file's name and the row; then the documents and the question rows go to
``POST /api/targets``, which validates them again and saves the target on the server. The new
target is selected in the sidebar picker. Retain corpora and question sets are the bio-basics
target's (general text and the general-knowledge quiz), which fit any topic.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import streamlit as st

from unlearn_core.data.corpora import split_paragraph_docs, strip_gutenberg
from unlearn_core.data.question_files import QuestionFileError, parse_question_file
from unlearn_core.features.target_limits import NAME_RE  # noqa: E402 (torch-free: one definition)
from unlearn_core.ui import connection as CN
from unlearn_core.ui import errors as ER
from unlearn_core.ui import target_picker as TP

NAME_RULE = "1-40 lower-case letters, digits, '-' or '_', starting with a letter or digit"
CORPUS_TYPES = ["txt", "jsonl"]
QUESTION_TYPES = ["json", "csv"]
CORPUS_HELP = (
    "Plain text: paragraphs separated by blank lines are grouped into documents. "
    'JSON lines: one {"text": ...} object per line, one document each.'
)
QUESTIONS_HELP = (
    "JSON: a list of {question, choices: [4 strings], answer: 0-3 or A-D} (the "
    "WMDP schema). CSV: columns question, choice0..choice3 (or A,B,C,D), answer."
)
DEFAULT_N, DEFAULT_C = 50, 200  # targets.save_target's defaults
RETAIN_NOTE = (
    "Retain side (what to keep): the bio-basics target's retain corpora (the general-knowledge quiz "
    "text, WikiText, WebText) and the general-knowledge quiz `quiz:retain`."
)


def _text(filename: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{filename}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None


def corpus_documents(filename: str, data: bytes) -> list[str]:
    """The documents of an uploaded corpus: a .txt file's blank-line separated paragraphs grouped
    into documents of at least 200 characters (``data.split_paragraph_docs``, as the server reads
    text files; a Project Gutenberg header and footer are dropped), or the ``"text"`` of each line
    of a .jsonl file. Raises ValueError naming the file (and the line)."""
    suffix = Path(filename).suffix.lower()
    text = _text(filename, data)
    if suffix == ".txt":
        if "*** START OF" in text:
            text = strip_gutenberg(text)
        docs = split_paragraph_docs(text)
    elif suffix == ".jsonl":
        docs = []
        for i, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{filename}, line {i}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f'{filename}, line {i}: expected an object with a "text" string')
            docs.append(row["text"])
    else:
        raise ValueError(f"{filename}: a corpus is a .txt or .jsonl file")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"{filename}: no text in the file")
    return docs


def question_rows(filename: str, data: bytes) -> list[dict]:
    """The questions of an uploaded .json (WMDP schema) or .csv file (``question``, ``choice0..3``
    or ``A,B,C,D``, ``answer`` 0-3 or A-D), checked by ``question_files.parse_question_file`` and
    returned as rows ``{"question", "choices", "answer": 0-3, <other fields>}``. Raises
    QuestionFileError with the uploaded file's name, the row and the fix."""
    suffix = Path(filename).suffix.lower()
    if suffix not in (".json", ".csv"):
        raise QuestionFileError(f"{filename}: questions are a .json (WMDP schema) or .csv file")
    text = _text(filename, data)
    with tempfile.TemporaryDirectory(prefix="unlearn-upload-") as d:
        path = Path(d) / f"questions{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            qs = parse_question_file(path, source="upload")
        except QuestionFileError as e:
            raise QuestionFileError(str(e).replace(str(path), filename)) from None
    return [{"question": q.question, "choices": list(q.choices), "answer": q.answer, **q.extra} for q in qs]


def check_name(name: str, taken: set[str]) -> str | None:
    """Why ``name`` cannot be a new target's name, or None."""
    if not NAME_RE.match(name):
        return f"A target name is {NAME_RULE}."
    if name in taken:
        return f"A target named {name!r} exists already; pick another name."
    return None


def _taken() -> set[str]:
    try:
        return {t["name"] for t in CN.cached("targets")["targets"]}
    except Exception:  # noqa: BLE001 - the sidebar already says why there are no targets
        return set()


def _uploaded(label: str, types: list[str], key: str, help: str, parse, what: str):
    """A file uploader's file parsed by ``parse(name, bytes)``, or None (nothing uploaded, or the
    parse error shown)."""
    upload = st.file_uploader(label, type=types, key=key, help=help)
    if upload is None:
        return None
    try:
        return parse(upload.name, upload.getvalue())
    except ValueError as e:
        st.error(f"{what}: {e}", icon=":material/warning:")
        return None


def _within_limit(parsed, summary: str, over: str | None):
    """An upload's summary line; the upload, or None when it is past the server's limit (``over``:
    the error shown, None when within it)."""
    st.caption(summary)
    if over:
        st.error(over)
        return None
    return parsed


def _corpus_upload(gen: int, max_chars: int) -> list[str] | None:
    """The forget corpus's uploader; its documents, or None (nothing uploaded, or an error shown)."""
    docs = _uploaded(
        "Forget corpus (.txt or .jsonl)", CORPUS_TYPES, f"nt_corpus_{gen}", CORPUS_HELP, corpus_documents, "The corpus"
    )
    if docs is None:
        return None
    chars = sum(len(d) for d in docs)
    over = f"The corpus is {chars:,} characters; the server takes at most {max_chars:,}."
    return _within_limit(docs, f"{len(docs)} document(s), {chars:,} characters.", over if chars > max_chars else None)


def _questions_upload(gen: int, max_questions: int) -> list[dict] | None:
    """The forget questions' uploader; their rows, or None (nothing uploaded, or an error shown)."""
    rows = _uploaded(
        "Forget questions (.json or .csv)",
        QUESTION_TYPES,
        f"nt_questions_{gen}",
        QUESTIONS_HELP,
        question_rows,
        "The questions",
    )
    if rows is None:
        return None
    over = f"{len(rows)} questions; the server takes at most {max_questions:,}."
    summary = f"{len(rows)} question(s), e.g. “{rows[0]['question'][:80]}”"
    return _within_limit(rows, summary, over if len(rows) > max_questions else None)


def _n_and_c(col_n, col_c, gen: int, max_features: int) -> tuple[int, float]:
    """The target's N (features kept) and default clamp value c."""
    n = col_n.number_input(
        "N features",
        1,
        max_features,
        DEFAULT_N,
        key=f"nt_n_{gen}",
        help="How many features the target's selection keeps (top N by firing frequency on the "
        "corpus, among those rare on the retain corpora).",
    )
    c = col_c.number_input(
        "Clamp value c",
        0,
        TP.MAX_C,
        DEFAULT_C,
        step=10,
        key=f"nt_c_{gen}",
        help="The target's default intervention: active features are set to −c.",
    )
    return int(n), float(c)


def _save_if_complete(name: str, problem: str | None, desc: str, docs, rows, n: int, c: float) -> None:
    """Save the target, or say what is missing (a name problem is already shown by its field)."""
    missing = [
        w
        for w, ok in (
            ("a name", bool(name)),
            ("a corpus file", docs is not None),
            ("a question file", rows is not None),
        )
        if not ok
    ]
    if missing:
        st.error("To save, give " + ", ".join(missing) + " (without errors).", icon=":material/warning:")
    elif not problem:
        save(name, desc, docs, rows, n, c)


def _delete_button(target: dict) -> None:
    """Delete the selected target (only shown for one defined in the app)."""
    st.divider()
    if st.button(
        f"Delete the target {target['name']}",
        key="nt_delete",
        icon=":material/delete:",
        help="It was defined in the app; built-in targets cannot be deleted.",
    ):
        out = ER.attempt(
            lambda: CN.call("delete_target", target["name"], retry=False),
            f"deleting the target {target['name']!r}",
        )
        if out is not None:
            TP.targets_changed()
            st.session_state["_target_saved"] = f"Target **{target['name']}** deleted."
            st.rerun()


def define_target_section(info: dict, target: dict | None) -> None:
    """The "Define your own target" expander: name, description, the two files, N and c; saving
    selects the new target. Also deletes the selected target when it was defined in the app."""
    done = st.session_state.pop("_target_saved", None)
    if done:
        st.success(done, icon=":material/check_circle:")
    gen = st.session_state.setdefault("_nt_gen", 0)  # a new set of widget keys empties the form after a save
    limits = info.get("limits", {})
    max_chars = int(limits.get("max_target_text_chars", 5_000_000))
    max_questions = int(limits.get("max_target_questions", 5_000))
    with st.expander("Define your own target", icon=":material/add_circle:"):
        st.markdown(
            "Forget a topic of your own: give a text about it (features are selected on it) and "
            "multiple-choice questions about it (scored with and without the clamp)."
        )
        st.caption(RETAIN_NOTE + f" Limits: {max_chars:,} characters of text, {max_questions:,} questions.")
        c1, c2 = st.columns([1, 2])
        name = c1.text_input("Name", key=f"nt_name_{gen}", placeholder="e.g. my-topic", help=NAME_RULE).strip()
        desc = c2.text_input("Description", key=f"nt_desc_{gen}", placeholder="what the target forgets", max_chars=2000)
        problem = check_name(name, _taken()) if name else None
        if problem:
            c1.error(problem, icon=":material/warning:")
        c1, c2 = st.columns(2)
        with c1:
            docs = _corpus_upload(gen, max_chars)
        with c2:
            rows = _questions_upload(gen, max_questions)
        c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
        n, c = _n_and_c(c1, c2, gen, int(limits.get("max_features", 512)))
        if c3.button("Save the target", type="primary", key="nt_save", icon=":material/save:"):
            _save_if_complete(name, problem, desc, docs, rows, n, c)
        if target and target.get("defined_in_app"):
            _delete_button(target)


def save(name: str, description: str, docs: list[str], rows: list[dict], n: int, c: float) -> None:
    """Send the target to the server; on success select it in the sidebar and empty the form."""
    t = ER.attempt(
        lambda: CN.call(
            "create_target", retry=False, name=name, description=description, documents=docs, questions=rows, n=n, c=c
        ),
        f"saving the target {name!r}",
        spinner="Saving the target on the server…",
    )
    if t is None:
        return
    TP.targets_changed()
    TP.select_target_next_run(t["name"])
    st.session_state["_nt_gen"] = st.session_state.get("_nt_gen", 0) + 1
    st.session_state["_target_saved"] = (
        f"Target **{t['name']}** saved ({len(docs)} document(s), {len(rows)} question(s)) and selected in the "
        "sidebar. Run the demo above, or open any page: they all start from it. Features are selected on its "
        "text the first time (slow on the real model, then cached)."
    )
    st.rerun()
