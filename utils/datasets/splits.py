"""The three splits of a dataset and the names of their list files (docs/data.md#list-files): train (training
images), test (the queries) and database (what a query searches).

One definition, in a module that imports nothing (no Paddle), so that what writes lists (data/make_coco_lists.py,
utils/datasets/toy.py), what checks them (data/check_data.py) and what reads them (utils/datasets/image_list.py,
utils/retrieval/database.py) name the same files.
"""
LIST_NAMES = ("train", "test", "database")
LIST_FILES = {name: f"{name}.txt" for name in LIST_NAMES}  # split -> its list file in the dataset's list folder
