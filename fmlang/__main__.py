from fmlang.cli.entry import main

main()
