"""`lift-mlx serve`: the HTTP layer and command (`http.py`), the served model (`model.py`) and
the absorb jobs started over HTTP (`jobs.py`)."""
