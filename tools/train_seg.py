#!/usr/bin/env python
"""Train a zoo seg config with mmengine's Runner (see zoo/integrations/mm_runner.py for the options)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from zoo.integrations.mm_runner import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main('train', 'seg'))
