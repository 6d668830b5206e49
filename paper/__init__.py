"""The paper's data, typed in once from its text (Hu et al., 2021) and read by both experiments/ and analysis/.

rows.py       the configurations a table's sweep runs (`row=<key>`): method and hyperparameters of each row
published.py  the published numbers, cell by cell, each row naming its config row where it has one
"""
