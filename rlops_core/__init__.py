"""The storage and checkpoint contract shared by training, serving and the operator.

URIs and storage backends (local folders and S3 through boto3), the ``rlops.json`` manifest and the
``best_checkpoint.txt`` pointer. It imports nothing else of the project and neither Ray nor torch, so
the operator's image can install it alone (an import-linter contract in ``make test`` keeps it so).
"""
