/* Waits for the two ways the control API asks a guest to stop, as a Linux guest would
 * act on them: a power button press (`shutdown`: the GED's event register at 0x603 reads
 * the press once) powers off through ACPI S5; Ctrl+Alt+Del on the i8042 (`ctrl-alt-del`)
 * resets. Says which before it acts. */
#include "guest.h"

void guest_main(void *boot_params) {
    (void)boot_params;
    static const u8 wanted[4] = {0x14, 0x11, 0xe0, 0x71};
    u8 seen[4] = {0, 0, 0, 0};
    puts("waiting for the power button or ctrl-alt-del\n");
    for (;;) {
        if (inb(GED_EVENT) & GED_POWER_BUTTON) {
            puts("power button\n");
            power_off();
        }
        if (!(inb(0x64) & 1)) {
            __asm__ volatile("pause");
            continue;
        }
        seen[0] = seen[1];
        seen[1] = seen[2];
        seen[2] = seen[3];
        seen[3] = inb(0x60);
        if (memeq(seen, wanted, 4)) {
            puts("ctrl-alt-del\n");
            reset();
        }
    }
}
