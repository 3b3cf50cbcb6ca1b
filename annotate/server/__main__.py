from .manage import main

main()
