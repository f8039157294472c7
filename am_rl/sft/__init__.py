"""SFT on verl's SFT trainer: the dataset class our recipes name, and their dry run."""
