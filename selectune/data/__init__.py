"""Stage 0, load: read instruction data in any supported format, validate every row (errors name file, row, line
and field, or rejected rows go to a side file), give each record a content id and drop exact duplicates.

readers.py  file formats -> rows          records.py  validation, ids, dedupe, writers
config.py   DataConfig                    stage.py    load_stage -> LoadOutputs
"""
