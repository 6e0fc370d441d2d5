"""Token ids with a fixed meaning, shared by data, models, tasks, decoding and benchmarks.

The zoo's character vocabularies (`zoo.data.pipelines.char_vocab.CharVocab`) reserve the first
NUM_SPECIAL ids: PAD_ID pads a row, BOS_ID starts a decoder's input, EOS_ID ends a target, and
UNK_ID stands for a character the vocabulary lacks; real tokens take ids NUM_SPECIAL, ... This
module imports nothing, so every layer (and the benchmarks) can take the ids from here.
"""

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
NUM_SPECIAL = 4  # the first id of a real token
