"""The recipe as data, knowing no task or strategy record: YAML read the YAML 1.2 way with overrides
(yaml.py), the shared sections (schema.py) built by type (typed.py), the `training` section checked
against TrainingArguments (training.py), and the runs of a transfer report (variants.py). Validation against the records is hf_transfer.validate, one layer up.
"""
