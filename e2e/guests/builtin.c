/* The e2e suite's guest for `hypervisor: builtin` (built with vmm/guests/start.S, guest.h
 * and guest.ld): says it is up and prints its kernel command line, echoes what arrives
 * on the serial console line by line (`GV-ECHO <line>`), and on a press of the ACPI
 * power button (what gitvisor-vmm's `shutdown` does; the GED's event register at 0x603
 * reads the press once) says so and powers off through ACPI S5, as a Linux guest running
 * acpid would, which ends the VMM. With `gv.deaf` on its command line it ignores
 * everything and halts, like a guest that runs nothing for the power button: only a
 * hard stop ends it. */
#include "guest.h"

static int contains(const char *text, const char *word) {
    for (; *text; text++) {
        const char *a = text, *b = word;
        while (*a && *b && *a == *b) { a++; b++; }
        if (!*b) return 1;
    }
    return 0;
}

void guest_main(u8 *zero_page) {
    const char *cmdline = (const char *)(u64)*(u32 *)(zero_page + 0x228);
    puts("GV-BUILTIN-UP\n");
    puts("GV-CMDLINE "); puts(cmdline); putc('\n');
    if (contains(cmdline, "gv.deaf")) {
        puts("GV-DEAF\n");
        for (;;) __asm__ volatile("cli; hlt");
    }
    char line[128];
    u64 length = 0;
    for (;;) {
        /* Each port read is an exit to the VMM: look a few hundred times a second. */
        for (int i = 0; i < 20000; i++) __asm__ volatile("pause");
        while (inb(COM1 + 5) & 1) {
            char c = (char)inb(COM1);
            if (c == '\r' || c == '\n') {
                if (length) {
                    line[length] = 0;
                    puts("GV-ECHO "); puts(line); putc('\n');
                    length = 0;
                }
            } else if (length + 1 < sizeof line) {
                line[length++] = c;
            }
        }
        if (inb(GED_EVENT) & GED_POWER_BUTTON) {
            puts("GV-POWER-BUTTON\n");
            power_off();
        }
    }
}
