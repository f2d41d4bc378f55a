# preprocess stage rules (see workflow/rules/common.smk for paths and scan lists)
