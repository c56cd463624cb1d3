/* Prints a marker on COM1 and resets through the i8042. */
#include "guest.h"

void guest_main(void *boot_params) {
    (void)boot_params;
    puts("gitvisor-guest: hello\n");
    reset();
}
