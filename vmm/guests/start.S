/* Entry of every test guest.
 *
 * 64-bit entry (_start, the ELF entry point): the VMM's Linux boot path enters here in
 * long mode with %rsi = the zero page; guest_main gets it as its first argument.
 *
 * 32-bit PVH entry (pvh_start, announced by the XEN_ELFNOTE_PHYS32_ENTRY note): how QEMU
 * boots the same ELF with -kernel (protected mode, paging off, %ebx = hvm_start_info).
 * It writes the same marker serial_reset.c prints and then resets: through the i8042
 * like the 64-bit guests, or, on QEMU's microvm (which has no i8042), through an
 * isa-debug-exit device at port 0xf4, so the benchmark compares like with like.
 */
    .section .text.start, "ax"
    .code64
    .globl _start
_start:
    mov %rsi, %rdi
    lea stack_top(%rip), %rsp
    call guest_main
1:  cli
    hlt
    jmp 1b

    .code32
    .globl pvh_start
pvh_start:
    mov $0x3f8, %dx
    mov $pvh_marker, %esi
2:  movb (%esi), %al
    test %al, %al
    jz 3f
    outb %al, %dx
    inc %esi
    jmp 2b
3:  mov 24(%ebx), %esi      /* hvm_start_info.cmdline_paddr: "idle" keeps the guest up */
    test %esi, %esi
    jz 5f
    cmpl $0x656c6469, (%esi)
    jne 5f
6:  cli
    hlt
    jmp 6b
5:  mov $0xfe, %al          /* i8042 reset (QEMU microvm has none: falls through) */
    outb %al, $0x64
    xor %al, %al            /* isa-debug-exit at 0xf4: QEMU exits with status 1 */
    outb %al, $0xf4
    lidt null_idt           /* last resort, a triple fault: with -no-reboot QEMU exits */
    int3
4:  hlt
    jmp 4b

    .section .rodata
pvh_marker:
    .asciz "gitvisor-guest: hello\n"
    .align 8
null_idt:
    .word 0
    .long 0

    .section .note.Xen, "a", @note
    .align 4
    .long 4                 /* name size: "Xen\0" */
    .long 4                 /* descriptor size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start

    .section .bss
    .align 16
stack:
    .space 16384
stack_top:

    .section .note.GNU-stack, "", @progbits
