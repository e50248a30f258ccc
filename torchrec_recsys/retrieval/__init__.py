"""Retrieval serving parts: FAISS index + id map, batched plain-model inference, and
retrieve-then-rank with its two-stage evaluation."""
