"""Hugging Face checkpoint import and export.

    >>> convert_from_hf("gpt2/", "runs/gpt2")       # a save_pretrained GPT-2 -> an lmforge run
    >>> convert_to_hf("runs/gpt2", "hf/gpt2")       # and back: GPT2LMHeadModel.from_pretrained loads it
    >>> convert_from_hf("minilm/", "runs/minilm")   # a BertModel / BertForMaskedLM / ...ForSequenceClassification
    >>> convert_from_hf("llama/", "runs/llama")     # LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM
    >>> convert_from_hf("bart/", "runs/bart")       # BartForConditionalGeneration, MarianMTModel (seq2seq)

``gpt2.py``, ``bert.py``, ``llama.py``, ``bart.py`` and ``marian.py`` map names and config fields, ``hf_files.py``, ``hf_tokenizer.py`` and
``hf_wordpiece.py`` read and write Hugging Face's files, ``convert.py`` puts them together.
"""

from lmforge.interop.convert import Conversion, convert_from_hf, convert_to_hf

__all__ = ["Conversion", "convert_from_hf", "convert_to_hf"]
