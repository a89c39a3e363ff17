"""Corpus-level review metrics, computed as the paper's reference evaluation does.

- ``lexical``: ROUGE-1 / ROUGE-L F1, METEOR (WordNet 3.0) and sacrebleu corpus BLEU;
- ``bertscore``: BERTScore F1, ``bertscore_f1`` with the paper's encoder or
  ``bertscore_minilm_f1`` with the offline fallback;
- ``harness``: lm-eval's ``process_results`` and the aggregations the task YAMLs use;
- ``uncertainty``: bootstrap intervals over documents and the paired significance test;
- ``wordnet`` / ``tokenize``: offline WordNet provisioning and METEOR's tokenizer.

Submodules import their heavy dependencies lazily; this package imports none of them.
"""
