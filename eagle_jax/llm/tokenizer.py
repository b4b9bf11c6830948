"""Tokenizers without torch: rebuilt from GGUF metadata, or read from an HF checkpoint folder.

transformers' own GGUF tokenizer loading goes through its torch-based GGUF reader. We read the
metadata with `gguf.GGUFReader` instead, group the fields exactly as
`transformers.integrations.gguf.gguf_tokenizer_mapping.get_gguf_tokenizer` does, and hand
them to that module's `convert_gguf_tokenizer` (an internal API: transformers is pinned and a
test compares the ids with HF's own tokenizer).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import transformers
from transformers.integrations.gguf import gguf_tokenizer_mapping

from eagle_jax.errors import EagleError

# Gemma chat/instruct models end a turn with this token; HF's Gemma 3 generation configs list it
# as an EOS next to <eos>.
_GEMMA_END_OF_TURN = "<end_of_turn>"


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
  """A tokenizer and the conventions around it.

  `tokenizer(text)` (add_special_tokens=True) prepends BOS exactly when `add_bos` is True, as the
  model's own tokenizer does; a chat template writes its own special tokens, so encode its output
  with add_special_tokens=False.
  """

  tokenizer: transformers.PreTrainedTokenizerFast
  chat_template: str | None
  bos_id: int | None
  eos_ids: tuple[int, ...]
  add_bos: bool


def gguf_metadata(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(tokenizer_dict, tokenizer_config) from GGUF key -> value metadata, grouped as HF does."""
  grouped = {
      group: {name: fields[f"tokenizer.{key}"] for key, name in renames.items()
              if f"tokenizer.{key}" in fields}
      for group, renames in gguf_tokenizer_mapping.GGUF_TOKENIZER_MAPPING.items()}
  tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
  if "tokens" not in tokenizer_dict:
    raise EagleError("the GGUF file has no tokenizer.ggml.tokens: it carries no tokenizer")
  if tokenizer_dict.get("tokenizer_type") == "llama":
    # As HF: llama.cpp adds BOS to a sentencepiece vocabulary unless the file says otherwise.
    tokenizer_config.setdefault("add_bos_token", True)
  tokens = tokenizer_dict["tokens"]
  for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                    ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
    token_id = fields.get(f"tokenizer.ggml.{key}")
    tokenizer_config[name] = tokens[token_id] if token_id is not None else None
  return tokenizer_dict, tokenizer_config


def from_gguf_fields(architecture: str, fields: dict[str, Any]) -> TokenizerInfo:
  """Builds the tokenizer a GGUF file describes from its (already decoded) metadata."""
  tokenizer_dict, tokenizer_config = gguf_metadata(fields)
  try:
    backend, extra = gguf_tokenizer_mapping.convert_gguf_tokenizer(architecture, tokenizer_dict)
  except ValueError as e:
    raise EagleError(f"cannot build the GGUF tokenizer: {e}") from e
  tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, **tokenizer_config,
                                                   **extra)
  eos_ids = [fields.get(f"tokenizer.ggml.{key}") for key in
             ("eos_token_id", "eot_token_id", "eom_token_id")]
  if architecture.startswith("gemma") and _GEMMA_END_OF_TURN in tokenizer.get_vocab():
    eos_ids.append(tokenizer.convert_tokens_to_ids(_GEMMA_END_OF_TURN))
  return TokenizerInfo(
      tokenizer=tokenizer,
      chat_template=tokenizer_config.get("chat_template"),
      bos_id=fields.get("tokenizer.ggml.bos_token_id"),
      eos_ids=_unique_ids(eos_ids, tokenizer),
      add_bos=bool(tokenizer_config.get("add_bos_token", False)))


def from_hf_dir(path: pathlib.Path) -> TokenizerInfo:
  """The tokenizer saved in an HF checkpoint folder (tokenizer.json / tokenizer_config.json)."""
  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  except (OSError, ValueError) as e:
    raise EagleError(f"{path}: no usable tokenizer files (tokenizer.json, "
                     f"tokenizer_config.json): {e}") from e
  eos_ids = [tokenizer.eos_token_id]
  for name in ("generation_config.json", "config.json"):
    if (path / name).is_file():
      ids = json.loads((path / name).read_text()).get("eos_token_id")
      eos_ids.extend(ids if isinstance(ids, list) else [ids])
  ids = tokenizer("a")["input_ids"]
  bos_id = tokenizer.bos_token_id
  return TokenizerInfo(
      tokenizer=tokenizer,
      chat_template=tokenizer.chat_template,
      bos_id=bos_id,
      eos_ids=_unique_ids(eos_ids, tokenizer),
      add_bos=bos_id is not None and bool(ids) and ids[0] == bos_id)


def _unique_ids(ids, tokenizer) -> tuple[int, ...]:
  vocab_size = len(tokenizer)
  out = []
  for i in ids:
    if i is not None and 0 <= int(i) < vocab_size and int(i) not in out:
      out.append(int(i))
  return tuple(out)
