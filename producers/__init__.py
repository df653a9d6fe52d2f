"""Methods that write ``.dd`` files: RUO, DDOQ, IGDS and WMDD, each in its own subpackage.

Producers depend on :mod:`ddformat` (its writer, codecs, models and training loop); ddformat
never imports from here.
"""
