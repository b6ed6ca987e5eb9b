"""The service layer: the use cases that orchestrate the database (xnovu/db) and Novu (xnovu/novu) over the pure
domain of xnovu/core. Temporal's activities and the worker's composition root call it; it knows nothing of them."""
