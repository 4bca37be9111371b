"""Item towers: ID embeddings, frozen content features, hybrid; fusion of modalities."""
