"""Imported first by every entry script: silences Paddle's import-time `UserWarning: No ccache found ...` (about
compiling C++ extensions, which this project never does) and nothing else; every other warning still shows.

It must run before `import paddle`, so it imports nothing from this project or from Paddle.
"""
import warnings

warnings.filterwarnings("ignore", message=r"No ccache found", category=UserWarning)
