# Conveniences over dev.py (which needs nothing but Python).
.PHONY: demo test ci check
demo:
	python3 dev.py demo
test:
	python3 dev.py test
ci:
	bash .ci/run
check:
	.venv/bin/python manage.py check && .venv/bin/python manage.py makemigrations --check --dry-run
