from sage_ft_cli.main import main

main()
