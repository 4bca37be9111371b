"""User-item graph and pair models: LightGCN, MMGCN, VBPR."""
