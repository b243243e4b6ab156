"""Using trained codes: encoding queries (the fast encoder), the database and its code cache, Hamming search,
contact sheets and the local search page."""
