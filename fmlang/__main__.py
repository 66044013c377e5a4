from fmlang.cli.main import main

main()
