"""A sentencepiece tokenizer trained on the training captions.

The model is BPE: on small, repetitive caption corpora the unigram model splits common words into odd pieces
('plai' + 'n') and gives sequences about 40% longer. Text is NFKC-normalised and case-folded (`nmt_nfkc_cf`).
Ids: pad 0, unk 1, bos 2, eos 3. `encode` gives fixed-length rows `[bos, pieces..., eos, pad...]`; a caption
longer than the row keeps its bos, loses its last pieces and still ends with eos, so every row is framed by bos
and eos.
"""
import io
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
MIN_LENGTH = 3  # bos, one piece, eos


def train_tokenizer(captions: Iterable[str], vocab_size: int) -> bytes:
  """Trains a BPE sentencepiece model on `captions`; returns the serialized model (the bytes of tokenizer.model).

  `vocab_size` is a ceiling: a corpus too small for that many pieces gets fewer (hard_vocab_limit=False).
  """
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(captions), model_writer=model, model_type='bpe', vocab_size=vocab_size,
      hard_vocab_limit=False, normalization_rule_name='nmt_nfkc_cf', character_coverage=1.0, pad_id=PAD_ID,
      unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, num_threads=1, minloglevel=2)
  return model.getvalue()


class Tokenizer:
  """Encodes captions into fixed-length id rows with a validity mask."""

  def __init__(self, model_proto: bytes):
    """`model_proto`: a serialized sentencepiece model, as train_tokenizer returns and tokenizer.model holds."""
    self._processor = spm.SentencePieceProcessor(model_proto=model_proto)

  @property
  def vocab_size(self) -> int:
    return self._processor.get_piece_size()

  def vocabulary(self) -> list[str]:
    """The piece of every id (index = id); word-initial pieces start with '\u2581' (sentencepiece's space)."""
    return [self._processor.id_to_piece(i) for i in range(self.vocab_size)]

  def encode(self, texts: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns ids int32 [N, length] and mask bool [N, length] (True on bos, pieces and eos)."""
    if length < MIN_LENGTH:
      raise ValueError(f'length must be at least {MIN_LENGTH} (bos, one piece, eos), got {length}')
    ids = np.full((len(texts), length), PAD_ID, np.int32)
    pieces = self._processor.encode(list(texts), out_type=int)
    for row, text_pieces in enumerate(pieces):
      framed = [BOS_ID] + text_pieces[:length - 2] + [EOS_ID]
      ids[row, :len(framed)] = framed
    return ids, ids != PAD_ID

  def unknown_fraction(self, texts: Sequence[str]) -> float:
    """The share of the pieces of `texts` (whole, not cut to a row length) that the vocabulary lacks (unk)."""
    pieces = self._processor.encode(list(texts), out_type=int)
    total = sum(len(text_pieces) for text_pieces in pieces)
    return sum(text_pieces.count(UNK_ID) for text_pieces in pieces) / max(total, 1)

  def decode(self, ids: np.ndarray) -> list[str] | str:
    """Inverse of `encode` for one row [L] (-> str) or a batch [N, L] (-> list); pad, bos and eos are dropped."""
    ids = np.asarray(ids)
    if ids.ndim == 1:
      return self._processor.decode([int(i) for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)])
    return [self.decode(row) for row in ids]
