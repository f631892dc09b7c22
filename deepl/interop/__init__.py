"""Weights in and out of other libraries' formats.

  from deepl.interop import huggingface    # GPT-2 and BERT folders
"""
