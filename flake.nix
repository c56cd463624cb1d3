{
  description = "gitvisor: declarative GitOps reconciler for Linux hosts (VMs, containers, bridges, volumes)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
    in
    {
      packages = forAllSystems (pkgs: {
        gitvisor = pkgs.rustPlatform.buildRustPackage {
          pname = "gitvisor";
          inherit version;
          src = nixpkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # gitvisor-vmm too: `hypervisor: builtin` runs the one next to gitvisor.
          cargoBuildFlags = [ "--package" "gitvisor" "--package" "gitvisor-vmm" ];
          # The unit and integration tests run in the build; the e2e suite needs root,
          # network namespaces and a kernel, so it runs in CI (.ci/run), not here.
          cargoTestFlags = [ "--package" "gitvisor" ];
          nativeCheckInputs = [ pkgs.git ];
          postInstall = ''
            install -Dm644 contrib/systemd/gitvisor.service $out/lib/systemd/system/gitvisor.service
            substituteInPlace $out/lib/systemd/system/gitvisor.service \
              --replace-fail /usr/bin/gitvisor $out/bin/gitvisor
          '';
          meta = {
            description = "Declarative GitOps reconciler for Linux hosts";
            license = nixpkgs.lib.licenses.asl20;
            mainProgram = "gitvisor";
            platforms = nixpkgs.lib.platforms.linux;
          };
        };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.gitvisor;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.gitvisor ];
          packages = with pkgs; [
            cargo rustc clippy rustfmt rust-analyzer
            git iproute2 openssh util-linux systemd prometheus
            qemu lvm2 runc skopeo umoci
          ];
        };
      });

      # services.gitvisor: the controller as a systemd service, the same unit as
      # contrib/systemd/gitvisor.service.
      nixosModules.default = { config, lib, pkgs, ... }:
        let
          cfg = config.services.gitvisor;
          inherit (lib) mkEnableOption mkOption mkIf types optionalAttrs;
        in
        {
          options.services.gitvisor = {
            enable = mkEnableOption "the gitvisor controller";
            package = mkOption {
              type = types.package;
              default = self.packages.${pkgs.stdenv.hostPlatform.system}.gitvisor;
              defaultText = lib.literalExpression "gitvisor.packages.\${system}.gitvisor";
              description = "The gitvisor package to run.";
            };
            source = mkOption {
              type = types.str;
              example = "https://git.example.com/ops/hosts.git";
              description = "A directory of manifests, or a git URL (file://, ssh://, https://, git://, user@host:path).";
            };
            ref = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "main";
              description = "The branch, tag or commit of a git source to follow (default: the remote's HEAD).";
            };
            path = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "hosts";
              description = "The directory inside the source to load.";
            };
            poll = mkOption {
              type = types.str;
              default = "60s";
              description = "How often to fetch a git source.";
            };
            resync = mkOption {
              type = types.str;
              default = "5m";
              description = "How often to compare the host with the revision and repair drift.";
            };
            metricsListen = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "9464";
              description = "Serve Prometheus metrics here: PORT or :PORT (loopback), IP:PORT or [IPv6]:PORT.";
            };
            allowedSigners = mkOption {
              type = types.nullOr types.path;
              default = null;
              description = "Apply only commits signed (SSH) by a key in this allowed-signers file.";
            };
            gpgHome = mkOption {
              type = types.nullOr types.path;
              default = null;
              description = "Apply only commits signed (OpenPGP) by a key in this GnuPG home.";
            };
            host = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "The host name matched against metadata.host (default: the hostname).";
            };
          };

          config = mkIf cfg.enable {
            environment.systemPackages = [ cfg.package ];
            systemd.services.gitvisor = {
              description = "gitvisor controller (declarative host reconciler)";
              wantedBy = [ "multi-user.target" ];
              wants = [ "network-online.target" ];
              after = [ "network-online.target" ];
              path = [ pkgs.git pkgs.openssh pkgs.gnupg ];
              environment = {
                GITVISOR_SOURCE = cfg.source;
                GITVISOR_POLL = cfg.poll;
                GITVISOR_RESYNC = cfg.resync;
              }
              // optionalAttrs (cfg.ref != null) { GITVISOR_REF = cfg.ref; }
              // optionalAttrs (cfg.path != null) { GITVISOR_PATH = cfg.path; }
              // optionalAttrs (cfg.metricsListen != null) { GITVISOR_METRICS_LISTEN = cfg.metricsListen; }
              // optionalAttrs (cfg.allowedSigners != null) { GITVISOR_ALLOWED_SIGNERS = toString cfg.allowedSigners; }
              // optionalAttrs (cfg.gpgHome != null) { GITVISOR_GPG_HOME = toString cfg.gpgHome; }
              // optionalAttrs (cfg.host != null) { GITVISOR_HOST = cfg.host; };
              serviceConfig = {
                Type = "notify";
                NotifyAccess = "main";
                ExecStart = "${cfg.package}/bin/gitvisor --state-dir /var/lib/gitvisor --run-dir /run/gitvisor run";
                ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
                Restart = "on-failure";
                RestartSec = "5s";
                TimeoutStartSec = "10min";
                TimeoutStopSec = "2min";
                WatchdogSec = "5min";
                KillMode = "process";
                StateDirectory = "gitvisor";
                StateDirectoryMode = "0700";
                RuntimeDirectory = "gitvisor";
                RuntimeDirectoryMode = "0700";
                RuntimeDirectoryPreserve = "yes";
                # The sandbox of contrib/systemd/gitvisor.service, which says why each
                # capability is here and what is left out on purpose.
                CapabilityBoundingSet = [
                  "CAP_NET_ADMIN" "CAP_NET_BIND_SERVICE" "CAP_NET_RAW" "CAP_SYS_ADMIN" "CAP_IPC_LOCK"
                  "CAP_SETUID" "CAP_SETGID" "CAP_SETPCAP" "CAP_SYS_CHROOT" "CAP_MKNOD"
                  "CAP_CHOWN" "CAP_FOWNER" "CAP_FSETID" "CAP_DAC_OVERRIDE" "CAP_SETFCAP" "CAP_KILL"
                  "CAP_AUDIT_WRITE" "CAP_SYS_PTRACE"
                ];
                AmbientCapabilities = "";
                NoNewPrivileges = true;
                RestrictAddressFamilies = [ "AF_UNIX" "AF_NETLINK" "AF_INET" "AF_INET6" ];
                RestrictNamespaces = "~user";
                RestrictRealtime = true;
                LockPersonality = true;
                SystemCallArchitectures = "native";
                SystemCallFilter = [ "@system-service" "@mount" "@privileged" "@resources" ];
                SystemCallErrorNumber = "EPERM";
              };
            };
          };
        };
    };
}
