"""Binary codes, Hamming search and the retrieval metrics, with the figures drawn from them: NumPy only, no Paddle."""
