# Evaluates flake.nix without nixpkgs (CI has no network for it): its outputs with a
# stub nixpkgs, and the NixOS module services.gitvisor with a stub lib, so the module's
# options, environment and unit settings can be checked (e2e/tests/controller.rs).
# nix-instantiate --eval --strict --json --arg flakeFile $PWD/flake.nix e2e/nix/flake-eval.nix
{ flakeFile }:
let
  stubLib = rec {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    cleanSource = p: p;
    licenses.asl20 = "asl20";
    platforms.linux = [ "x86_64-linux" ];
    mkEnableOption = d: { _option = true; default = false; };
    mkOption = o: o // { _option = true; };
    mkIf = cond: value: if cond then value else { };
    optionalAttrs = cond: value: if cond then value else { };
    literalExpression = t: t;
    types = { package = "package"; str = "str"; path = "path"; nullOr = t: "nullOr ${t}"; };
  };
  pkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    rustPlatform.buildRustPackage = a: { drvName = a.pname; inherit (a) version; };
    mkShell = a: a;
    git = "git"; openssh = "openssh"; gnupg = "gnupg"; coreutils = "coreutils";
  };
  nixpkgs = { lib = stubLib; legacyPackages.x86_64-linux = pkgs; legacyPackages.aarch64-linux = pkgs; };
  flake = import flakeFile;
  self = flake.outputs { inherit self nixpkgs; };
  module = self.nixosModules.default {
    lib = stubLib;
    inherit pkgs;
    config.services.gitvisor = {
      enable = true; package = { outPath = "/nix/store/x-gitvisor"; }; source = "https://git.example.com/hosts.git";
      ref = "main"; path = null; poll = "30s"; resync = "5m"; metricsListen = "9464";
      allowedSigners = null; gpgHome = null; host = null;
    };
  };
  service = module.config.systemd.services.gitvisor;
in {
  options = builtins.attrNames module.options.services.gitvisor;
  execStart = service.serviceConfig.ExecStart;
  type = service.serviceConfig.Type;
  environment = service.environment;
  package = self.packages.x86_64-linux.default.drvName;
  serviceKeys = builtins.attrNames service.serviceConfig;
  capabilityBoundingSet = service.serviceConfig.CapabilityBoundingSet;
  shell = builtins.length self.devShells.x86_64-linux.default.packages;
}
