"""Async triggers: poll a whole site's workflows or rules in one call per interval."""
