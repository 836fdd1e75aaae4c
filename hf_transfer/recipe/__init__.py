"""The recipe: YAML (yaml.py) -> typed sections (schema.py, typed.py) -> a validated Recipe (validate.py:
`load_recipe`, `dump_recipe`); the runs of a transfer report (variants.py).

Nothing is imported here: the task and strategy records import the schema, and validation imports them.
"""
