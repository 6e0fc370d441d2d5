"""The training fields of every run config and their defaults (`zoo.train.config.base_config`
adds the model's and its task's fields). A plain dict, importable without ml_collections."""
from typing import Any

TRAIN_DEFAULTS: dict[str, Any] = dict(
    model="gpt_tiny",  # a name from zoo.list_models()
    seed=0,
    # Data.
    # The embedded corpus, or any TFDS dataset name ("lm1b", "ted_hrlr_translate/pt_to_en")
    # prepared as array_record in data_dir; runs never download.
    dataset="zoo_text",
    # None: $ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets (embedded and TFDS datasets)
    data_dir=None,
    # "byte" (UTF-8 bytes, 256 ids) or "sentencepiece" (language-model tasks: trained on the
    # dataset's train split, cached in the data dir, saved in the workdir as tokenizer.model).
    tokenizer="byte",
    spm_model_type="unigram",  # sentencepiece: "unigram" or "bpe"
    spm_vocab_size=None,  # sentencepiece: its number of pieces (None: the model's vocab_size)
    eval_split="validation",
    seq_len=256,
    reverse_source=False,  # seq2seq: feed each source reversed (Sutskever et al. 2014)
    source_key=None,  # seq2seq on a real TFDS dataset: its source / target feature names
    target_key=None,
    text_key=None,  # the text feature (None: "text", or a classification dataset's usual one)
    label_key=None,  # classification: the label feature (None: "label")
    tags_key=None,  # tagging: the per-token tag feature
    # Causal / masked LM on GPT or BERT (and the encoder-decoder transformer's seq2seq): whole
    # documents packed into rows of seq_len tokens with segment ids and per-segment positions
    # (zoo/data/pipelines/packing.py); attention and targets never cross a document.
    packing=False,
    # Classification, tagging, seq2seq: train batches of examples of similar length, padded to
    # the smallest of seq_len/8, /4, /2, seq_len that holds them (zoo/data/pipelines/bucketing.py).
    bucket_by_length=False,
    init_from=None,  # a workdir whose latest checkpoint initialises the matching parameters
    # Input pipeline (zoo.data.pipelines.loader): worker processes building train batches (0: a
    # background thread of the training process) and batches read ahead (per worker).
    data_workers=0,
    data_prefetch=2,
    # Optimisation.
    num_train_steps=1000,
    per_device_batch_size=16,
    grad_accum_steps=1,  # micro-batches per step (per_device_batch_size must divide by it)
    learning_rate=1e-3,
    schedule="cosine",  # cosine | linear | rsqrt (noam) | constant | wsd
    warmup_steps=100,
    weight_decay=0.1,
    grad_clip_norm=1.0,  # 0 disables clipping
    adam_b1=0.9,
    adam_b2=0.95,
    adam_eps=1e-8,
    # A step whose loss or gradient norm is NaN / inf never updates the parameters. "stop": the
    # run stops at the next log, eval or checkpoint naming that step; "skip": the update is
    # skipped and counted (metric "nonfinite_steps") and training goes on.
    nonfinite_policy="stop",
    # Parallelism: "pmap" over the local devices (collectives spanning the processes); "jit"
    # over every device, data parallel (CUDA_VISIBLE_DEVICES for one GPU); "auto" = pmap when
    # this process has several devices, else jit; "mesh" = jit over a device mesh
    # (zoo/train/mesh.py): data parallel, FSDP, tensor parallel.
    parallel="auto",
    # parallel="mesh": devices per mesh axis (-1: the rest); data x fsdp split the batch rows,
    # fsdp also the parameters and optimizer state, tensor the heads / MLP / vocabulary.
    mesh=dict(data=-1, fsdp=1, tensor=1),
    # parallel="mesh": (logical axis, mesh axis | None) pairs that take precedence over
    # zoo.train.partitioning.DEFAULT_RULES, e.g. (("vocab", None),) keeps the vocab whole.
    logical_axis_rules=(),
    # Several processes (hosts): "auto" starts jax.distributed when the environment says this
    # is one of several processes (SLURM, Open MPI, Kubernetes, TPU VM, or the three fields
    # below / JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); "on" | "off".
    distributed="auto",
    coordinator_address=None,  # host:port of process 0
    num_processes=None,
    process_id=None,
    # Resuming with another global batch (per_device_batch_size x device count) than the
    # checkpoint's is refused unless True; the data position is then rescaled to the same
    # number of examples seen.
    allow_batch_change=False,
    # JAX's persistent compilation cache (zoo/jax_runtime.py); False: compile afresh this run.
    compilation_cache=True,
    # Bookkeeping.
    log_every_steps=10,
    eval_every_steps=200,
    num_eval_batches=20,
    checkpoint_every_steps=200,
    keep_checkpoints=3,
    # Samples printed at the end of training.
    num_samples=2,
    sample_prompt="The ",
    sample_length=200,
    sample_temperature=0.8,
    sample_top_k=0,
    sample_top_p=0.95,
)
