"""Words: the text tower, the lexical index, their fusion, training and evaluation."""
