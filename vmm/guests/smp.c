/* Starts every application processor the MP table lists, the way an OS does: INIT, then
 * two STARTUP IPIs through the boot CPU's local APIC, pointing at a real-mode trampoline
 * that counts itself in and halts. Prints how many CPUs the table lists and how many
 * came up. */
#include "guest.h"

#define TRAMPOLINE 0x30000UL
#define COUNTER 0x30f00UL
#define LAPIC 0xfee00000UL
#define ICR_LOW 0x300
#define ICR_HIGH 0x310
#define SVR 0x0f0

extern const u8 ap_trampoline[], ap_trampoline_end[];
__asm__(".pushsection .rodata\n"
        ".code16\n"
        ".globl ap_trampoline\n"
        "ap_trampoline:\n"
        "  cli\n"
        "  mov $0x3000, %ax\n"
        "  mov %ax, %ds\n"
        "  lock incw 0x0f00\n"
        "1: hlt\n"
        "  jmp 1b\n"
        ".globl ap_trampoline_end\n"
        "ap_trampoline_end:\n"
        ".code64\n"
        ".popsection\n");

static void ipi(u8 apic_id, u32 command) {
    mmio_write(LAPIC + ICR_HIGH, (u32)apic_id << 24);
    mmio_write(LAPIC + ICR_LOW, command);
    while (mmio_read(LAPIC + ICR_LOW) & (1 << 12)) __asm__ volatile("pause");
}

void guest_main(void *boot_params) {
    (void)boot_params;
    u8 ids[64];
    int cpus = 0;
    for (u64 p = 0x9fc00; p < 0xa0000; p += 16) {
        if (!memeq((void *)p, "_MP_", 4)) continue;
        u8 *table = (u8 *)(u64)*(u32 *)(p + 4);
        u16 count = *(u16 *)(table + 34);
        u8 *entry = table + 44;
        for (int i = 0; i < count; i++) {
            if (entry[0] == 0) {
                if (cpus < 64 && (entry[3] & 1)) ids[cpus++] = entry[1];
                entry += 20;
            } else {
                entry += 8;
            }
        }
        break;
    }
    puts("mptable cpus: "); putdec(cpus); putc('\n');

    memcpy((void *)TRAMPOLINE, ap_trampoline, ap_trampoline_end - ap_trampoline);
    *(volatile u16 *)COUNTER = 0;
    mmio_write(LAPIC + SVR, mmio_read(LAPIC + SVR) | 0x100);
    u8 self = mmio_read(LAPIC + 0x20) >> 24;
    for (int i = 0; i < cpus; i++) {
        if (ids[i] == self) continue;
        ipi(ids[i], 0x4500);                             /* INIT, assert */
        ipi(ids[i], 0x4600 | (TRAMPOLINE >> 12));        /* STARTUP */
        ipi(ids[i], 0x4600 | (TRAMPOLINE >> 12));
    }
    u64 spins = 0;
    while (*(volatile u16 *)COUNTER < cpus - 1 && spins < 2000000000UL) {
        __asm__ volatile("pause");
        spins++;
    }
    puts("application processors up: "); putdec(*(volatile u16 *)COUNTER); putc('\n');
    reset();
}
