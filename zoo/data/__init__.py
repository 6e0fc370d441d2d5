"""Data: `builders` make the embedded TFDS datasets; `pipelines` turn datasets into batches.

`zoo.data.pipelines.create_data(task_name, config, global_batch)` is the training loop's entry
point. Special token ids live in `zoo.special_tokens`, below every layer.
"""
