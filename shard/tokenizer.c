/* placeholder: being written (tokenizer issue) */
