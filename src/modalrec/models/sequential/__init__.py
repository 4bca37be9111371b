"""Sequence encoders over item vectors: SASRec, GRU4Rec, BERT4Rec (item tower injected)."""
