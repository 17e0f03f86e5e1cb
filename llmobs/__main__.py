from llmobs.cli.main import run

run()
