/* Finds the ACPI tables the way Linux does and checks them: the RSDP from the zero page
 * (acpi_rsdp_addr, boot protocol 2.14) and by the legacy scan of 0xE0000-0xFFFFF, its
 * two checksums, the XSDT and every table it lists, FADT -> DSDT. Reports the MADT's
 * CPUs, the FADT's registers, the DSDT's \_S5 and each LNRO0005 device's window and
 * interrupt, and reads the virtio magic and device ID from each window.
 *
 * Then, by the command line: "poweroff" writes S5 to the FADT's sleep control register
 * (what Linux's poweroff does last), "acpi-reset" writes the reset value to the FADT's
 * reset register; otherwise it resets through the i8042. */
#include "guest.h"

static u8 sum(const u8 *bytes, u32 len) {
    u8 s = 0;
    for (u32 i = 0; i < len; i++) s += bytes[i];
    return s;
}

static u32 u32_at(const u8 *p) { return *(const u32 *)p; }
static u64 u64_at(const u8 *p) { return *(const u64 *)p; }

static int contains(const char *haystack, const char *needle) {
    for (; *haystack; haystack++) {
        const char *h = haystack, *n = needle;
        while (*n && *h == *n) { h++; n++; }
        if (!*n) return 1;
    }
    return 0;
}

/* A table's length after its checksum was checked; 0 if the checksum is wrong. */
static u32 table_ok(const u8 *table, const char *signature) {
    u32 len = u32_at(table + 4);
    if (!memeq(table, signature, 4)) {
        puts("table "); puts(signature); puts(": wrong signature\n");
        return 0;
    }
    if (sum(table, len) != 0) {
        puts("table "); puts(signature); puts(": bad checksum\n");
        return 0;
    }
    return len;
}

/* The SLP_TYP of \_S5: NameOp "_S5_" PackageOp PkgLength NumElements, first element. */
static int s5_slp_typ(const u8 *dsdt, u32 len) {
    for (u32 i = 36; i + 8 < len; i++) {
        if (dsdt[i] == 0x08 && memeq(dsdt + i + 1, "_S5_", 4) && dsdt[i + 5] == 0x12) {
            const u8 *element = dsdt + i + 8; /* one-byte PkgLength */
            if (element[0] == 0x0a) return element[1];
            if (element[0] <= 1) return element[0];
        }
    }
    return -1;
}

/* Each LNRO0005 device: the Memory32Fixed and Extended Interrupt of the _CRS after it. */
static void devices(const u8 *dsdt, u32 len) {
    int count = 0;
    for (u32 i = 36; i + 8 < len; i++) {
        if (!memeq(dsdt + i, "LNRO0005", 8)) continue;
        count++;
        u64 base = 0;
        u32 irq = 0;
        u8 flags = 0;
        u32 j = i + 8;
        for (; j + 12 < len; j++) {
            if (dsdt[j] == 0x86 && dsdt[j + 1] == 9 && dsdt[j + 2] == 0) {
                base = u32_at(dsdt + j + 4);
                j += 12;
                break;
            }
        }
        for (; j + 9 <= len; j++) {
            if (dsdt[j] == 0x89 && dsdt[j + 1] == 6 && dsdt[j + 2] == 0) {
                flags = dsdt[j + 3];
                irq = u32_at(dsdt + j + 5);
                break;
            }
        }
        u32 magic = mmio_read(base);
        puts("device: base "); puthex(base); puts(" irq "); putdec(irq);
        puts(" flags "); puthex(flags);
        puts(" magic "); for (int b = 0; b < 4; b++) putc((char)(magic >> (8 * b)));
        puts(" id "); putdec(mmio_read(base + 8)); putc('\n');
    }
    puts("lnro0005 devices: "); putdec(count); putc('\n');
}

void guest_main(u8 *zero_page) {
    u64 rsdp_addr = u64_at(zero_page + 0x70);
    u64 scanned = 0;
    for (u64 p = 0xe0000; p < 0x100000; p += 16) {
        if (memeq((void *)p, "RSD PTR ", 8)) { scanned = p; break; }
    }
    puts("rsdp: "); puthex(rsdp_addr); puts(" scan: "); puthex(scanned); putc('\n');
    const u8 *rsdp = (const u8 *)rsdp_addr;
    if (sum(rsdp, 20) != 0 || sum(rsdp, u32_at(rsdp + 20)) != 0 || rsdp[15] != 2) {
        puts("rsdp: bad\n");
        reset();
    }
    const u8 *xsdt = (const u8 *)u64_at(rsdp + 24);
    u32 xsdt_len = table_ok(xsdt, "XSDT");
    if (!xsdt_len) reset();
    const u8 *fadt = 0, *madt = 0;
    for (u32 off = 36; off < xsdt_len; off += 8) {
        const u8 *table = (const u8 *)u64_at(xsdt + off);
        puts("xsdt entry: ");
        for (int b = 0; b < 4; b++) putc((char)table[b]);
        if (sum(table, u32_at(table + 4)) != 0) puts(" bad checksum");
        putc('\n');
        if (memeq(table, "FACP", 4)) fadt = table;
        if (memeq(table, "APIC", 4)) madt = table;
    }
    if (!fadt || !madt || !table_ok(fadt, "FACP") || !table_ok(madt, "APIC")) reset();

    int cpus = 0;
    u64 ioapic = 0;
    for (u32 off = 44; off < u32_at(madt + 4); off += madt[off + 1]) {
        if (madt[off] == 0 && (u32_at(madt + off + 4) & 1)) cpus++;
        if (madt[off] == 1) ioapic = u32_at(madt + off + 4);
    }
    puts("madt cpus: "); putdec(cpus); puts(" ioapic: "); puthex(ioapic); putc('\n');

    u32 flags = u32_at(fadt + 112);
    puts("fadt hw-reduced: "); putdec((flags >> 20) & 1);
    puts(" reset-reg: "); putdec((flags >> 10) & 1); putc('\n');
    /* Generic Address Structures: space (1 = I/O), width, offset, access size, address. */
    const u8 *reset_reg = fadt + 116, *sleep_control = fadt + 244, *sleep_status = fadt + 256;
    u8 reset_value = fadt[128];
    puts("sleep control: "); puthex(u64_at(sleep_control + 4));
    puts(" space "); putdec(sleep_control[0]);
    puts(" status: "); puthex(u64_at(sleep_status + 4));
    puts(" reset: "); puthex(u64_at(reset_reg + 4)); puts(" value "); puthex(reset_value);
    putc('\n');

    const u8 *dsdt = (const u8 *)u64_at(fadt + 140);
    u32 dsdt_len = table_ok(dsdt, "DSDT");
    if (!dsdt_len) reset();
    int slp_typ = s5_slp_typ(dsdt, dsdt_len);
    puts("s5 slp_typ: "); putdec((u64)slp_typ); putc('\n');
    devices(dsdt, dsdt_len);

    const char *cmdline = (const char *)(u64)u32_at(zero_page + 0x228);
    if (contains(cmdline, "poweroff") && sleep_control[0] == 1 && slp_typ >= 0) {
        puts("powering off\n");
        outb((u16)u64_at(sleep_control + 4), (u8)((slp_typ << 2) | 0x20));
    } else if (contains(cmdline, "acpi-reset") && reset_reg[0] == 1) {
        puts("resetting\n");
        outb((u16)u64_at(reset_reg + 4), reset_value);
    } else {
        puts("acpi done\n");
        reset();
    }
    for (;;) __asm__ volatile("cli; hlt");
}
