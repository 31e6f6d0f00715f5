"""mianshen (免申即享): the nightly pipeline behind Wolong District's benefits-without-applying programme."""
