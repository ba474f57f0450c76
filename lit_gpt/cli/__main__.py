"""``python -m lit_gpt.cli ...`` runs the ``lit-gpt`` command (Lightning re-runs this for each extra device)."""

from lit_gpt.cli import main

if __name__ == "__main__":
    main()
