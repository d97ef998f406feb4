#if canImport(CryptoKit) && canImport(Security)
import CryptoKit
import DoorstepFFI
import Foundation
import Security

/// Seals doorstep's secrets with AES-256-GCM (CryptoKit) under a key kept in the iOS Keychain,
/// readable only on this device after its first unlock (`kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly`),
/// never synced to iCloud. The sealed form is CryptoKit's combined `nonce ‖ ciphertext ‖ tag`.
public final class KeychainVault: KeyVault {
    private let service: String
    private let account: String

    public init(service: String = "app.doorstep", account: String = "vault-key") {
        self.service = service
        self.account = account
    }

    public func seal(plaintext: Data) throws -> Data {
        do {
            guard let combined = try AES.GCM.seal(plaintext, using: try key()).combined else {
                throw HostError.Failed(reason: "AES-GCM produced no combined form")
            }
            return combined
        } catch let error as HostError {
            throw error
        } catch {
            throw HostError.Failed(reason: "seal failed: \(type(of: error))")
        }
    }

    public func unseal(sealed: Data) throws -> Data {
        do {
            return try AES.GCM.open(try AES.GCM.SealedBox(combined: sealed), using: try key())
        } catch let error as HostError {
            throw error
        } catch {
            throw HostError.Failed(reason: "unseal failed: \(type(of: error))")
        }
    }

    private func key() throws -> SymmetricKey {
        if let existing = try load() { return SymmetricKey(data: existing) }
        let fresh = SymmetricKey(size: .bits256)
        let data = fresh.withUnsafeBytes { Data($0) }
        let attributes: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
            kSecAttrAccessible as String: kSecAttrAccessibleAfterFirstUnlockThisDeviceOnly,
            kSecAttrSynchronizable as String: false,
            kSecValueData as String: data,
        ]
        let status = SecItemAdd(attributes as CFDictionary, nil)
        if status == errSecDuplicateItem, let raced = try load() { return SymmetricKey(data: raced) }
        guard status == errSecSuccess else { throw HostError.Failed(reason: "keychain add: OSStatus \(status)") }
        return fresh
    }

    private func load() throws -> Data? {
        let query: [String: Any] = [
            kSecClass as String: kSecClassGenericPassword,
            kSecAttrService as String: service,
            kSecAttrAccount as String: account,
            kSecReturnData as String: true,
            kSecMatchLimit as String: kSecMatchLimitOne,
        ]
        var item: CFTypeRef?
        let status = SecItemCopyMatching(query as CFDictionary, &item)
        switch status {
        case errSecSuccess: return item as? Data
        case errSecItemNotFound: return nil
        default: throw HostError.Failed(reason: "keychain read: OSStatus \(status)")
        }
    }
}
#endif
