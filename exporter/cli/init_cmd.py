"""`mixtral-export init`: write a random checkpoint of a preset in the HF hub layout."""
