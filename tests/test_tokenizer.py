"""The sentencepiece tokenizer: special ids, case folding, fixed-length rows, truncation, masks."""

import numpy as np
import pytest
import sentencepiece as spm

from axm_jax.data.synthetic.builder import SynthPedes
from axm_jax.data.synthetic.records import generate_records
from axm_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer

VOCAB_CEILING = 400


@pytest.fixture(scope='session')
def captions() -> list[str]:
  config = next(config for config in SynthPedes.BUILDER_CONFIGS if config.name == 'tiny')
  records = generate_records(config.size, config.seed, 'train')
  return [caption for record in records for caption in record.captions]


@pytest.fixture(scope='session')
def model_proto(captions) -> bytes:
  return train_tokenizer(iter(captions), VOCAB_CEILING)


@pytest.fixture(scope='session')
def tokenizer(model_proto) -> Tokenizer:
  return Tokenizer(model_proto)


def test_training_is_deterministic(captions, model_proto):
  assert train_tokenizer(iter(captions), VOCAB_CEILING) == model_proto


def test_special_ids_and_vocab_size(model_proto, tokenizer):
  processor = spm.SentencePieceProcessor(model_proto=model_proto)
  assert [processor.id_to_piece(i) for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID)] == ['<pad>', '<unk>', '<s>', '</s>']
  assert (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id()) == (0, 1, 2, 3)
  assert tokenizer.vocab_size == processor.get_piece_size()
  assert 4 < tokenizer.vocab_size <= VOCAB_CEILING


def test_vocabulary_lists_pieces_by_id(tokenizer):
  vocabulary = tokenizer.vocabulary()
  assert len(vocabulary) == tokenizer.vocab_size
  assert vocabulary[:4] == ['<pad>', '<unk>', '<s>', '</s>']
  ids, mask = tokenizer.encode(['a man wearing a red shirt'], 16)
  assert [vocabulary[i] for i in ids[0][mask[0]]] == ['<s>', '\u2581a', '\u2581man', '\u2581wearing', '\u2581a',
                                                       '\u2581red', '\u2581shirt', '</s>']


def test_encode_frames_pads_and_masks(model_proto, tokenizer):
  processor = spm.SentencePieceProcessor(model_proto=model_proto)
  texts = ['A man wearing a red shirt.', 'The woman carries a blue backpack and wears black jeans.', '']
  ids, mask = tokenizer.encode(texts, 24)
  assert ids.dtype == np.int32 and ids.shape == (3, 24)
  assert mask.dtype == bool and mask.shape == (3, 24)
  for row, text in enumerate(texts):
    pieces = processor.encode(text.lower(), out_type=int)
    expected = np.zeros(24, np.int32)
    expected[:len(pieces) + 2] = [BOS_ID] + pieces + [EOS_ID]
    np.testing.assert_array_equal(ids[row], expected)
    np.testing.assert_array_equal(mask[row], np.arange(24) < len(pieces) + 2)
  np.testing.assert_array_equal(ids[2, :3], [BOS_ID, EOS_ID, PAD_ID])


def test_case_folding_and_round_trip(tokenizer, captions):
  ids, _ = tokenizer.encode(captions[:50], 64)
  assert tokenizer.decode(ids) == [caption.lower() for caption in captions[:50]]
  shouted, _ = tokenizer.encode(['A MAN WEARING A RED SHIRT.'], 16)
  quiet, _ = tokenizer.encode(['a man wearing a red shirt.'], 16)
  np.testing.assert_array_equal(shouted, quiet)
  assert tokenizer.decode(quiet[0]) == 'a man wearing a red shirt.'


def test_unknown_characters_map_to_unk(tokenizer):
  ids, _ = tokenizer.encode(['\u4e2d'], 8)
  assert UNK_ID in ids[0, 1:-1].tolist()


def test_truncation_keeps_bos_and_ends_with_eos(model_proto, tokenizer):
  processor = spm.SentencePieceProcessor(model_proto=model_proto)
  text = 'a man wearing a red shirt, blue jeans, white shoes and a black backpack.'
  pieces = processor.encode(text, out_type=int)
  length = 6
  assert len(pieces) > length
  ids, mask = tokenizer.encode([text], length)
  np.testing.assert_array_equal(ids[0], [BOS_ID] + pieces[:length - 2] + [EOS_ID])
  assert mask.all()


@pytest.mark.parametrize('length', [0, 2])
def test_too_short_length_raises(tokenizer, length):
  with pytest.raises(ValueError, match=rf'^length must be at least 3 \(bos, one piece, eos\), got {length}$'):
    tokenizer.encode(['a man'], length)
