"""Index and search: FAISS indexes, the top-k search over a build, similarity modes, near-duplicates."""
