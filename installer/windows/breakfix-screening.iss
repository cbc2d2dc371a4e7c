; Inno Setup 6 script: Windows installer of the BreakFix Desktop SCREENING bundle.
;
; Built on Windows (not on the Linux build machine):
;   1. py -3.11 -m venv .buildvenv && .buildvenv\Scripts\pip install -c requirements\lock.txt -r installer\requirements-build.txt .
;   2. .buildvenv\Scripts\pyinstaller --noconfirm --distpath dist --workpath build\pyinstaller installer\breakfix_screening.spec
;      -> dist\breakfix-screening\ (breakfix-screening.exe windowed, breakfix-screening-cli.exe console, _internal\)
;   3. dist\breakfix-screening\breakfix-screening-cli.exe --self-test
;   4. iscc installer\windows\breakfix-screening.iss   -> dist\installer\BreakFix-Screening-Setup-<version>.exe
;
; tests/test_installer_consistency.py keeps this file in step with the PyInstaller spec
; (bundle and executable names), pyproject.toml (version) and resources/ (icon).

#define AppName "BreakFix Desktop Screening"
#define AppVersion "0.1.0"
#define AppPublisher "BreakFix"
#define BundleName "breakfix-screening"
#define BundleDir "..\..\dist\" + BundleName

[Setup]
AppId={{6B7E2F0C-4D1A-4C55-9F3E-8A1D2B7C9E41}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher={#AppPublisher}
DefaultDirName={autopf}\BreakFix Screening
DefaultGroupName=BreakFix Desktop
DisableProgramGroupPage=yes
OutputDir=..\..\dist\installer
OutputBaseFilename=BreakFix-Screening-Setup-{#AppVersion}
SetupIconFile=..\..\resources\icons\breakfix.ico
UninstallDisplayIcon={app}\{#BundleName}.exe
Compression=lzma2/max
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
PrivilegesRequired=admin
PrivilegesRequiredOverridesAllowed=dialog
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#BundleDir}\{#BundleName}.exe"; DestDir: "{app}"; Flags: ignoreversion
Source: "{#BundleDir}\{#BundleName}-cli.exe"; DestDir: "{app}"; Flags: ignoreversion
; Python, Qt, onnxruntime (CPU) and resources\{models,triggers,icons}
Source: "{#BundleDir}\_internal\*"; DestDir: "{app}\_internal"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; a model left over from an older version would be refused (no manifest entry), but keep the folder clean
Type: filesandordirs; Name: "{app}\_internal\resources\models"

[Icons]
Name: "{group}\BreakFix Desktop"; Filename: "{app}\{#BundleName}.exe"
Name: "{group}\BreakFix Desktop self-test"; Filename: "{cmd}"; Parameters: "/k """"{app}\{#BundleName}-cli.exe"" --self-test"""
Name: "{group}\Uninstall BreakFix Desktop"; Filename: "{uninstallexe}"
Name: "{autodesktop}\BreakFix Desktop"; Filename: "{app}\{#BundleName}.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\{#BundleName}.exe"; Description: "{cm:LaunchProgram,BreakFix Desktop}"; Flags: nowait postinstall skipifsilent

[Code]
{ After copying the files, run the bundle's self-test (model hashes, probe screening); warn loudly
  when it fails, so nobody screens scans with a broken installation. }
procedure CurStepChanged(CurStep: TSetupStep);
var
  ResultCode: Integer;
begin
  if CurStep = ssPostInstall then
  begin
    WizardForm.StatusLabel.Caption := 'Running the BreakFix self-test...';
    if not Exec(ExpandConstant('{app}\{#BundleName}-cli.exe'), '--self-test', ExpandConstant('{app}'),
                SW_HIDE, ewWaitUntilTerminated, ResultCode) or (ResultCode <> 0) then
      SuppressibleMsgBox('The BreakFix self-test did not pass (exit code ' + IntToStr(ResultCode) + '). ' +
        'Open "BreakFix Desktop self-test" in the Start menu to see why, and do not screen scans until it passes.',
        mbError, MB_OK, IDOK);
  end;
end;
