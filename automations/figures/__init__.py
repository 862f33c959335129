"""Figures computed by the database for people to read, over querysets the selectors scoped.

The ops view's aggregates (`ops`), a run's progress and estimate (`progress`), and the
percentile helper both use (`percentiles`).

Reads only, and always from a queryset a selector has already scoped to the user asking.
"""
