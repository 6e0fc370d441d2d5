"""Builders of the embedded TFDS datasets, generated offline from what ships with Python.

* `zoo_text`: "zoo_text", English text (pydoc topics, stdlib docstrings), for language models;
* `zoo_docstrings`: "zoo_docstrings", stdlib docstrings labelled by area (classification);
* `zoo_code_tags`: "zoo_code_tags", stdlib source lines tagged per character (tagging);
* `zoo_num2words`: "zoo_num2words", numbers in English words -> another language (seq2seq);
* `zoo_synthetic_seq2seq`: "zoo_synthetic_seq2seq", copy / reverse / sort / addition (seq2seq).

Each module's `prepare(data_dir)` builds its dataset once as array_record (`preparation`);
`seq2seq_datasets.prepare("<dataset>/<config>")` does so for the seq2seq ones. Shared pieces:
`stdlib_sources` (the stdlib's files), `labelled_builder` and `pair_builder` (base classes).
Reading the prepared splits into batches is `zoo.data.pipelines`' job.
"""

# The task each embedded dataset serves: its pipeline prepares it on first use (the others
# only read it once prepared).
TASKS: dict[str, str] = {
    "zoo_text": "language modelling",
    "zoo_docstrings": "classification",
    "zoo_code_tags": "tagging",
    "zoo_num2words": "seq2seq",
    "zoo_synthetic_seq2seq": "seq2seq",
}
