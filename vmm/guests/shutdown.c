/* Waits for Ctrl+Alt+Del on the i8042 (what the control API's `shutdown` sends), says
 * so and resets, as a Linux guest's init does on Ctrl+Alt+Del. */
#include "guest.h"

void guest_main(void *boot_params) {
    (void)boot_params;
    static const u8 wanted[4] = {0x14, 0x11, 0xe0, 0x71};
    u8 seen[4] = {0, 0, 0, 0};
    puts("waiting for ctrl-alt-del\n");
    for (;;) {
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
