"""The ``.dd`` container: preamble, header schema, section layout, bit account, byte sources
and the atomic writer. It places, checks and finds bytes; what the bytes mean is the codecs'."""
