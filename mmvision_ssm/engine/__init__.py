"""mmengine hooks used by tools/train.py and tools/test.py."""
